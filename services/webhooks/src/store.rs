//! The webhooks service in SQL: subscriptions, events with their
//! deliveries, attempts, idempotency keys and the ledger cursor. An event
//! and its deliveries are written in the transaction that moves the
//! cursor past what it came from, so every event is recorded once and
//! before any attempt.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::{AnyConnection, Row};

use loyalty_common::clock::{Clock, Micros};
use loyalty_common::db::{Database, Dialect, placeholders, placeholders_with};
use loyalty_common::follow;
use loyalty_common::idempotency::{self, begin_write};

use crate::domain::{self, Endpoint};
use crate::error::Error;

/// Names this service's row in `consumer_cursors`.
const CONSUMER: &str = "webhooks";
/// Rows per multi-row INSERT.
const ROWS_PER_STATEMENT: usize = 200;

/// `enabled` values.
pub const DISABLED: i64 = 0;
pub const ENABLED: i64 = 1;
pub const FAILING: i64 = 2;

/// A subscription as stored, secrets aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub program_id: String,
    pub endpoint: Endpoint,
    /// [`DISABLED`], [`ENABLED`] or [`FAILING`].
    pub status: i64,
    pub created_at: Micros,
    pub failing_since: Option<Micros>,
    pub previous_until: Option<Micros>,
    pub version: i64,
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, program_id, url, event_types, description, ordered, enabled, \
     created_at_us, failing_since_us, previous_until_us, version";

fn subscription_row(row: &sqlx::any::AnyRow) -> Result<SubscriptionRow, sqlx::Error> {
    let types: String = row.try_get("event_types")?;
    let status: i64 = row.try_get("enabled")?;
    Ok(SubscriptionRow {
        subscription_id: row.try_get("subscription_id")?,
        program_id: row.try_get("program_id")?,
        endpoint: Endpoint {
            url: row.try_get("url")?,
            event_types: types.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
            description: row.try_get("description")?,
            ordered: row.try_get::<i64, _>("ordered")? != 0,
            enabled: status == ENABLED,
        },
        status,
        created_at: row.try_get("created_at_us")?,
        failing_since: row.try_get("failing_since_us")?,
        previous_until: row.try_get("previous_until_us")?,
        version: row.try_get("version")?,
    })
}

/// The stored form of a list of event types: each between commas, or empty for all.
fn types_column(types: &[String]) -> String {
    if types.is_empty() { String::new() } else { format!(",{},", types.join(",")) }
}

/// An event to record: what it is and for whom, and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub program_id: String,
    pub event_type: &'static str,
    pub customer_id: String,
    /// What it came from (`points`) and where (the ledger's sequence), to record it once.
    pub source: &'static str,
    pub source_position: String,
    pub occurred_at: Micros,
    /// The `data` of the body.
    pub data: serde_json::Value,
}

/// The event type of the reminder.
pub const EXPIRING_SOON: &str = "points.expiring_soon";

/// Points of a customer that expire at an instant (a lot, or the lots
/// that expire together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring {
    pub program_id: String,
    pub customer_id: String,
    pub expires_at: Micros,
}

/// A delivery taken for an attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery_seq: i64,
    pub subscription_id: String,
    pub event_id: String,
    pub url: String,
    pub body: String,
    /// The secrets that sign it: the current one, then the previous one during an overlap.
    pub secrets: Vec<String>,
    pub attempts: i64,
    /// Until when this replica holds it: its outcome is written only while it still does.
    pub lease: Micros,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_seq: i64,
    /// The lease the attempt was made under ([`Due::lease`]).
    pub lease: Micros,
    pub subscription_id: String,
    pub attempt: i64,
    pub attempted_at: Micros,
    pub status_code: i64,
    pub latency_ms: i64,
    pub response: String,
    pub error: String,
    pub delivered: bool,
}

/// A delivery as ListDeliveries shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub delivery_seq: i64,
    pub delivery_id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    pub customer_id: String,
    pub state: String,
    pub next_attempt: Option<Micros>,
    pub created_at: Micros,
    pub body: String,
    pub attempts: Vec<AttemptRow>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempted_at: Micros,
    pub status_code: i64,
    pub latency_ms: i64,
    pub response: String,
    pub error: String,
}

/// What became of the subscriptions that attempts failed for.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Subscriptions disabled now for failing too long.
    pub disabled: Vec<String>,
}

pub struct WebhooksStore {
    db: Database,
    clock: Arc<dyn Clock>,
}

impl WebhooksStore {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn now(&self) -> Micros {
        self.clock.now()
    }

    // ------------------------------------------------------------ subscriptions

    /// Runs `write` under an idempotency key: a replay returns the saved
    /// answer (and `true`), a first call saves `write`'s answer in its transaction.
    pub async fn idempotent<T, F>(
        &self,
        program_id: &str,
        method: &'static str,
        key: &str,
        request: &serde_json::Value,
        write: F,
    ) -> Result<(T, bool), Error>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: AsyncFnOnce(&mut AnyConnection, Micros) -> Result<T, Error>,
    {
        let now = self.now();
        let hash = idempotency::request_hash(program_id, request);
        let mut tx = begin_write(&self.db).await?;
        if let Some(saved) = idempotency::claim(&mut tx, program_id, method, key, &hash, now).await? {
            return Ok((loyalty_common::db::from_json(&saved)?, true));
        }
        let answer = write(&mut tx, now).await?;
        idempotency::save(&mut tx, program_id, method, key, &loyalty_common::db::to_json(&answer), "").await?;
        tx.commit().await?;
        Ok((answer, false))
    }

    /// Stores a new subscription with its secret.
    pub async fn insert_subscription(
        conn: &mut AnyConnection,
        program_id: &str,
        endpoint: &Endpoint,
        secret: &str,
        now: Micros,
    ) -> Result<String, Error> {
        let id = domain::new_id("sub_");
        sqlx::query(
            "INSERT INTO subscriptions (subscription_id, program_id, url, event_types, description, ordered, \
             enabled, secret, version, created_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(&id)
        .bind(program_id)
        .bind(&endpoint.url)
        .bind(types_column(&endpoint.event_types))
        .bind(&endpoint.description)
        .bind(i64::from(endpoint.ordered))
        .bind(if endpoint.enabled { ENABLED } else { DISABLED })
        .bind(secret)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(id)
    }

    /// One subscription of `program_id`.
    pub async fn subscription<'e>(
        executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
        program_id: &str,
        subscription_id: &str,
    ) -> Result<SubscriptionRow, Error> {
        let sql =
            format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE program_id = $1 AND subscription_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(subscription_id)
            .fetch_optional(executor)
            .await?
            .ok_or_else(|| Error::SubscriptionNotFound(subscription_id.to_owned()))?;
        Ok(subscription_row(&row)?)
    }

    pub async fn get_subscription(&self, program_id: &str, subscription_id: &str) -> Result<SubscriptionRow, Error> {
        Self::subscription(&self.db.pool, program_id, subscription_id).await
    }

    /// The program's subscriptions by id, after `after` (an id), `limit` at most.
    pub async fn list_subscriptions(
        &self,
        program_id: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SubscriptionRow>, Error> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE program_id = $1 AND subscription_id > $2 \
             ORDER BY subscription_id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows.iter().map(subscription_row).collect::<Result<_, _>>()?)
    }

    /// Replaces a subscription's endpoint if its version is `expected` (0: any).
    /// Enabling clears the failing state.
    pub async fn update_subscription(
        conn: &mut AnyConnection,
        dialect: Dialect,
        program_id: &str,
        subscription_id: &str,
        endpoint: &Endpoint,
        expected: i64,
    ) -> Result<SubscriptionRow, Error> {
        let current = Self::locked(conn, dialect, program_id, subscription_id).await?;
        if expected != 0 && expected != current.version {
            return Err(Error::VersionMismatch { expected, actual: current.version });
        }
        let enabled = if endpoint.enabled {
            ENABLED
        } else if current.status == FAILING {
            FAILING
        } else {
            DISABLED
        };
        sqlx::query(
            "UPDATE subscriptions SET url = $1, event_types = $2, description = $3, ordered = $4, enabled = $5, \
             failing_since_us = CASE WHEN $5 = 1 THEN NULL ELSE failing_since_us END, version = version + 1 \
             WHERE subscription_id = $6",
        )
        .bind(&endpoint.url)
        .bind(types_column(&endpoint.event_types))
        .bind(&endpoint.description)
        .bind(i64::from(endpoint.ordered))
        .bind(enabled)
        .bind(subscription_id)
        .execute(&mut *conn)
        .await?;
        Self::subscription(&mut *conn, program_id, subscription_id).await
    }

    async fn locked(
        conn: &mut AnyConnection,
        dialect: Dialect,
        program_id: &str,
        subscription_id: &str,
    ) -> Result<SubscriptionRow, Error> {
        let sql = format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE program_id = $1 AND subscription_id = $2{}",
            dialect.for_update()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(program_id)
            .bind(subscription_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::SubscriptionNotFound(subscription_id.to_owned()))?;
        Ok(subscription_row(&row)?)
    }

    /// Deletes a subscription and its pending deliveries (what was
    /// delivered stays listed for no one; its attempts go with it).
    pub async fn delete_subscription(
        conn: &mut AnyConnection,
        program_id: &str,
        subscription_id: &str,
    ) -> Result<(), Error> {
        let deleted = sqlx::query("DELETE FROM subscriptions WHERE program_id = $1 AND subscription_id = $2")
            .bind(program_id)
            .bind(subscription_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(Error::SubscriptionNotFound(subscription_id.to_owned()));
        }
        sqlx::query(
            "DELETE FROM attempts WHERE delivery_seq IN \
             (SELECT delivery_seq FROM deliveries WHERE subscription_id = $1)",
        )
        .bind(subscription_id)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM deliveries WHERE subscription_id = $1")
            .bind(subscription_id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// A new secret; the current one becomes the previous, signing until `until`.
    pub async fn rotate_secret(
        conn: &mut AnyConnection,
        dialect: Dialect,
        program_id: &str,
        subscription_id: &str,
        secret: &str,
        until: Micros,
    ) -> Result<SubscriptionRow, Error> {
        Self::locked(conn, dialect, program_id, subscription_id).await?;
        sqlx::query(
            "UPDATE subscriptions SET previous_secret = secret, previous_until_us = $1, secret = $2, \
             version = version + 1 WHERE subscription_id = $3",
        )
        .bind(until)
        .bind(secret)
        .bind(subscription_id)
        .execute(&mut *conn)
        .await?;
        Self::subscription(&mut *conn, program_id, subscription_id).await
    }

    // ------------------------------------------------------------ events in

    /// The ledger cursor.
    pub async fn cursor(&self) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, CONSUMER).await?)
    }

    /// Records the events of one ledger batch and their deliveries, and the
    /// points that will expire for programs that want reminders, and moves
    /// the cursor, in one transaction; what comes from positions at or
    /// before the cursor was recorded already and is skipped. Returns how
    /// many deliveries were made.
    pub async fn record_batch(
        &self,
        events: &[(i64, NewEvent)],
        expiring: &[(i64, Expiring)],
        last_sequence: i64,
    ) -> Result<usize, Error> {
        let mut tx = begin_write(&self.db).await?;
        let cursor = follow::lock_cursor(&mut tx, self.db.dialect, CONSUMER).await?;
        let fresh: Vec<&NewEvent> = events.iter().filter(|(seq, _)| *seq > cursor).map(|(_, e)| e).collect();
        let made = Self::record(&mut tx, &fresh, None, self.now()).await?;
        let expiring: Vec<&Expiring> = expiring.iter().filter(|(seq, _)| *seq > cursor).map(|(_, e)| e).collect();
        Self::remember_expiring(&mut tx, &expiring).await?;
        follow::advance_cursor(&mut *tx, CONSUMER, last_sequence).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Records `events` for every enabled subscription of their program that
    /// wants them (but `except`), with one pending delivery each, due now.
    /// Events no subscription wants are not kept, nor an event whose source
    /// position was recorded already (a reminder another replica sent).
    pub async fn record(
        conn: &mut AnyConnection,
        events: &[&NewEvent],
        except: Option<&str>,
        now: Micros,
    ) -> Result<usize, Error> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut programs: Vec<&str> = events.iter().map(|e| e.program_id.as_str()).collect();
        programs.sort_unstable();
        programs.dedup();
        let subscribers = Self::subscribers(conn, &programs).await?;
        let mut event_rows: Vec<(String, &NewEvent, String, Vec<&str>)> = Vec::new();
        for &event in events {
            let wanting: Vec<&str> = subscribers
                .get(event.program_id.as_str())
                .into_iter()
                .flatten()
                .filter(|(id, endpoint)| endpoint.wants(event.event_type) && except != Some(id.as_str()))
                .map(|(id, _)| id.as_str())
                .collect();
            if !wanting.is_empty() {
                event_rows.push((domain::new_id("evt_"), event, body(event), wanting));
            }
        }
        let mut delivery_rows: Vec<(String, &str, String, &str)> = Vec::new();
        for chunk in event_rows.chunks(ROWS_PER_STATEMENT) {
            let values = placeholders(chunk.len(), 8);
            let sql = format!(
                "INSERT INTO events (event_id, program_id, event_type, customer_id, source, source_position, body, \
                 occurred_at_us) VALUES {values} ON CONFLICT (source, source_position) DO NOTHING RETURNING event_id"
            );
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for (id, event, body, _) in chunk {
                query = query
                    .bind(id)
                    .bind(&event.program_id)
                    .bind(event.event_type)
                    .bind(&event.customer_id)
                    .bind(event.source)
                    .bind(&event.source_position)
                    .bind(body)
                    .bind(event.occurred_at);
            }
            let inserted: HashSet<String> = query.fetch_all(&mut *conn).await?.into_iter().collect();
            for (event_id, event, _, wanting) in chunk.iter().filter(|row| inserted.contains(&row.0)) {
                for subscription_id in wanting {
                    delivery_rows.push((domain::new_id("dlv_"), subscription_id, event_id.clone(), &event.customer_id));
                }
            }
        }
        for chunk in delivery_rows.chunks(ROWS_PER_STATEMENT) {
            Self::insert_deliveries(conn, chunk, now).await?;
        }
        Ok(delivery_rows.len())
    }

    // ------------------------------------------------------------ other streams

    /// The programs with an enabled subscription that wants `event_type`,
    /// each with the creation of the first such subscription.
    pub async fn programs_wanting(&self, event_type: &str) -> Result<Vec<(String, Micros)>, Error> {
        let rows = sqlx::query(
            "SELECT program_id, MIN(created_at_us) AS since FROM subscriptions WHERE enabled = 1 \
             AND (event_types = '' OR event_types LIKE $1) GROUP BY program_id ORDER BY program_id",
        )
        .bind(format!("%,{event_type},%"))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("program_id")?, r.try_get("since")?))).collect()
    }

    /// Where a followed stream stands (0 before the first).
    pub async fn stream_cursor(&self, consumer: &str) -> Result<i64, Error> {
        Ok(follow::read_cursor(&self.db.pool, consumer).await?)
    }

    /// Records the events of one page of a followed stream and moves its
    /// cursor (never back), in one transaction.
    pub async fn record_followed(&self, consumer: &str, events: &[NewEvent], last: i64) -> Result<usize, Error> {
        let mut tx = begin_write(&self.db).await?;
        let refs: Vec<&NewEvent> = events.iter().collect();
        let made = Self::record(&mut tx, &refs, None, self.now()).await?;
        follow::advance_cursor(&mut *tx, consumer, last).await?;
        tx.commit().await?;
        Ok(made)
    }

    // ------------------------------------------------------------ retention

    /// Forgets deliveries settled (delivered or given up) before `before`,
    /// their attempts, and the events left without a delivery, a few
    /// thousand rows per transaction. Returns the deliveries forgotten.
    pub async fn purge(&self, before: Micros) -> Result<u64, Error> {
        const ROWS: i64 = 5_000;
        let mut purged = 0;
        loop {
            let mut tx = begin_write(&self.db).await?;
            let seqs: Vec<i64> = sqlx::query_scalar(
                "SELECT delivery_seq FROM deliveries WHERE state <> 'pending' AND created_at_us < $1 \
                 ORDER BY delivery_seq LIMIT $2",
            )
            .bind(before)
            .bind(ROWS)
            .fetch_all(&mut *tx)
            .await?;
            if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                for table in ["attempts", "deliveries"] {
                    let sql = format!(
                        "DELETE FROM {table} WHERE delivery_seq BETWEEN $1 AND $2 AND delivery_seq IN \
                         (SELECT delivery_seq FROM deliveries WHERE state <> 'pending' AND created_at_us < $3)"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(first).bind(last).bind(before).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            purged += seqs.len() as u64;
            if (seqs.len() as i64) < ROWS {
                break;
            }
        }
        sqlx::query(
            "DELETE FROM events WHERE occurred_at_us < $1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.event_id)",
        )
        .bind(before)
        .execute(&self.db.pool)
        .await?;
        Ok(purged)
    }

    // ------------------------------------------------------------ statements

    /// Where a program's statement for `period` (`YYYY-MM`) stands: the last
    /// customer id it went past (empty before the first), or `None` once done.
    pub async fn statement_position(&self, program_id: &str, period: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT after_customer, done FROM statement_runs WHERE program_id = $1 AND period = $2")
            .bind(program_id)
            .bind(period)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else { return Ok(Some(String::new())) };
        let done: i64 = row.try_get("done")?;
        Ok((done == 0).then(|| row.try_get("after_customer")).transpose()?)
    }

    /// Records one page of statements and how far the run came (never
    /// back, never undone), in one transaction.
    pub async fn record_statements(
        &self,
        program_id: &str,
        period: &str,
        events: &[NewEvent],
        last: &str,
        done: bool,
    ) -> Result<usize, Error> {
        let mut tx = begin_write(&self.db).await?;
        let refs: Vec<&NewEvent> = events.iter().collect();
        let made = Self::record(&mut tx, &refs, None, self.now()).await?;
        sqlx::query(
            "INSERT INTO statement_runs (program_id, period, after_customer, done) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (program_id, period) DO UPDATE SET after_customer = excluded.after_customer, \
             done = excluded.done WHERE statement_runs.done = 0 AND statement_runs.after_customer <= excluded.after_customer",
        )
        .bind(program_id)
        .bind(period)
        .bind(last)
        .bind(i64::from(done))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(made)
    }

    // ------------------------------------------------------------ reminders

    /// Keeps the expiry instants of programs with an enabled subscription
    /// that wants `points.expiring_soon`.
    async fn remember_expiring(conn: &mut AnyConnection, expiring: &[&Expiring]) -> Result<(), Error> {
        if expiring.is_empty() {
            return Ok(());
        }
        let mut programs: Vec<&str> = expiring.iter().map(|e| e.program_id.as_str()).collect();
        programs.sort_unstable();
        programs.dedup();
        let subscribers = Self::subscribers(conn, &programs).await?;
        let wanted = |program: &str| {
            subscribers.get(program).is_some_and(|subs| subs.iter().any(|(_, e)| e.wants(EXPIRING_SOON)))
        };
        let rows: Vec<&&Expiring> = expiring.iter().filter(|e| wanted(&e.program_id)).collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values = placeholders(chunk.len(), 3);
            let sql = format!(
                "INSERT INTO reminders (program_id, customer_id, expires_at_us) VALUES {values} \
                 ON CONFLICT (program_id, customer_id, expires_at_us) DO NOTHING"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(&e.program_id).bind(&e.customer_id).bind(e.expires_at);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Forgets instants already past, and names the programs with reminders to come.
    pub async fn reminder_programs(&self) -> Result<Vec<String>, Error> {
        sqlx::query("DELETE FROM reminders WHERE expires_at_us <= $1").bind(self.now()).execute(&self.db.pool).await?;
        Ok(sqlx::query_scalar("SELECT DISTINCT program_id FROM reminders").fetch_all(&self.db.pool).await?)
    }

    /// Up to `limit` of a program's instants from now to `horizon`, soonest first.
    pub async fn due_reminders(&self, program_id: &str, horizon: Micros, limit: i64) -> Result<Vec<Expiring>, Error> {
        let rows = sqlx::query(
            "SELECT customer_id, expires_at_us FROM reminders WHERE program_id = $1 AND expires_at_us > $2 \
             AND expires_at_us <= $3 ORDER BY expires_at_us, customer_id LIMIT $4",
        )
        .bind(program_id)
        .bind(self.now())
        .bind(horizon)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Expiring {
                    program_id: program_id.to_owned(),
                    customer_id: r.try_get("customer_id")?,
                    expires_at: r.try_get("expires_at_us")?,
                })
            })
            .collect()
    }

    /// Records the reminders' events (each once, whichever replica comes
    /// first) and forgets the instants they were for, in one transaction.
    pub async fn record_reminders(&self, events: &[NewEvent], done: &[Expiring]) -> Result<usize, Error> {
        let mut tx = begin_write(&self.db).await?;
        let refs: Vec<&NewEvent> = events.iter().collect();
        let made = Self::record(&mut tx, &refs, None, self.now()).await?;
        for e in done {
            sqlx::query("DELETE FROM reminders WHERE program_id = $1 AND customer_id = $2 AND expires_at_us = $3")
                .bind(&e.program_id)
                .bind(&e.customer_id)
                .bind(e.expires_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    async fn insert_deliveries(
        conn: &mut AnyConnection,
        rows: &[(String, &str, String, &str)],
        now: Micros,
    ) -> Result<(), Error> {
        let values = placeholders_with(rows.len(), 6, ", 'pending', 0");
        let sql = format!(
            "INSERT INTO deliveries (delivery_id, subscription_id, event_id, customer_id, created_at_us, \
             next_attempt_us, state, attempts) VALUES {values}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (delivery_id, subscription_id, event_id, customer_id) in rows {
            query =
                query.bind(delivery_id).bind(*subscription_id).bind(event_id).bind(*customer_id).bind(now).bind(now);
        }
        query.execute(&mut *conn).await?;
        Ok(())
    }

    /// The enabled subscriptions of `programs`, by program.
    async fn subscribers(
        conn: &mut AnyConnection,
        programs: &[&str],
    ) -> Result<HashMap<String, Vec<(String, Endpoint)>>, Error> {
        let mut found: HashMap<String, Vec<(String, Endpoint)>> = HashMap::new();
        for chunk in programs.chunks(ROWS_PER_STATEMENT) {
            let list = (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE enabled = 1 AND program_id IN ({list})"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for program in chunk {
                query = query.bind(*program);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let row = subscription_row(&row)?;
                found.entry(row.program_id).or_default().push((row.subscription_id, row.endpoint));
            }
        }
        Ok(found)
    }

    // ------------------------------------------------------------ deliveries out

    /// Takes up to `limit` due deliveries of enabled subscriptions for an
    /// attempt, leasing each until `lease_until`; in an ordered
    /// subscription, only a customer's earliest pending delivery.
    pub async fn take_due(&self, limit: i64, lease_until: Micros) -> Result<Vec<Due>, Error> {
        let now = self.now();
        let skip_locked = match self.db.dialect {
            Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE deliveries SET next_attempt_us = $1 WHERE delivery_seq IN (\
               SELECT d.delivery_seq FROM deliveries d \
               JOIN subscriptions s ON s.subscription_id = d.subscription_id \
               WHERE d.state = 'pending' AND d.next_attempt_us <= $2 AND s.enabled = 1 \
               AND (s.ordered = 0 OR NOT EXISTS (SELECT 1 FROM deliveries e \
                   WHERE e.subscription_id = d.subscription_id AND e.customer_id = d.customer_id \
                   AND e.state = 'pending' AND e.delivery_seq < d.delivery_seq)) \
               ORDER BY d.next_attempt_us LIMIT $3{skip_locked}) \
             RETURNING delivery_seq"
        );
        let mut tx = begin_write(&self.db).await?;
        let taken: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if taken.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let list = (1..=taken.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT d.delivery_seq, d.subscription_id, d.event_id, d.attempts, e.body, s.url, s.secret, \
             s.previous_secret, s.previous_until_us FROM deliveries d \
             LEFT JOIN events e ON e.event_id = d.event_id \
             JOIN subscriptions s ON s.subscription_id = d.subscription_id \
             WHERE d.delivery_seq IN ({list}) ORDER BY d.delivery_seq"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for seq in &taken {
            query = query.bind(seq);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        // A delivery whose event is gone (forgotten by the retention job while
        // a redelivery of it was being made) can never be sent: it fails.
        let mut orphans = Vec::new();
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            match row.try_get::<Option<String>, _>("body")? {
                Some(_) => found.push(row),
                None => orphans.push(row.try_get::<i64, _>("delivery_seq")?),
            }
        }
        if !orphans.is_empty() {
            let list = (1..=orphans.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "UPDATE deliveries SET state = 'failed', next_attempt_us = NULL WHERE delivery_seq IN ({list})"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for seq in &orphans {
                query = query.bind(seq);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let mut due = Vec::with_capacity(found.len());
        for row in found {
            let mut secrets = vec![row.try_get::<String, _>("secret")?];
            let previous: Option<String> = row.try_get("previous_secret")?;
            let until: Option<Micros> = row.try_get("previous_until_us")?;
            if let (Some(previous), Some(until)) = (previous, until)
                && until > now
            {
                secrets.push(previous);
            }
            due.push(Due {
                delivery_seq: row.try_get("delivery_seq")?,
                subscription_id: row.try_get("subscription_id")?,
                event_id: row.try_get("event_id")?,
                url: row.try_get("url")?,
                body: row.try_get("body")?,
                secrets,
                attempts: row.try_get("attempts")?,
                lease: lease_until,
            });
        }
        Ok(due)
    }

    /// Gives back deliveries taken under `lease` but not attempted (their
    /// endpoint had no free turn): due again at `at`.
    pub async fn postpone(&self, seqs: &[i64], lease: Micros, at: Micros) -> Result<(), Error> {
        let list = (3..seqs.len() + 3).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "UPDATE deliveries SET next_attempt_us = $1 WHERE next_attempt_us = $2 AND state = 'pending' \
             AND delivery_seq IN ({list})"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false).bind(at).bind(lease);
        for seq in seqs {
            query = query.bind(seq);
        }
        query.execute(&self.db.pool).await?;
        Ok(())
    }

    /// Writes how attempts went, in one transaction: the attempt, the
    /// delivery's next state (`next` says when a failed one is due again,
    /// or `None` when it is given up), and each subscription's failing
    /// state. A subscription failing since before `disable_before` is
    /// disabled, and a `subscription.disabled` event recorded for the others.
    pub async fn write_outcomes(
        &self,
        outcomes: &[(Outcome, Option<Micros>)],
        disable_before: Micros,
    ) -> Result<Written, Error> {
        let now = self.now();
        let mut tx = begin_write(&self.db).await?;
        for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
            let values = placeholders(chunk.len(), 7);
            let sql = format!(
                "INSERT INTO attempts (delivery_seq, attempt, attempted_at_us, status_code, latency_ms, response, \
                 error) VALUES {values} ON CONFLICT (delivery_seq, attempt) DO NOTHING"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (o, _) in chunk {
                query = query
                    .bind(o.delivery_seq)
                    .bind(o.attempt)
                    .bind(o.attempted_at)
                    .bind(o.status_code)
                    .bind(o.latency_ms)
                    .bind(&o.response)
                    .bind(&o.error);
            }
            query.execute(&mut *tx).await?;
        }
        // Every delivery's next state in one statement per chunk.
        for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|r| {
                    let n = r * 5;
                    format!(
                        "(CAST(${} AS BIGINT), ${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH v (seq, state, attempts, next_us, lease) AS (VALUES {values}) \
                 UPDATE deliveries SET state = v.state, attempts = v.attempts, next_attempt_us = v.next_us \
                 FROM v WHERE deliveries.delivery_seq = v.seq AND deliveries.state = 'pending' \
                 AND deliveries.next_attempt_us = v.lease"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for (outcome, next) in chunk {
                let state = match (outcome.delivered, next) {
                    (true, _) => "delivered",
                    (false, Some(_)) => "pending",
                    (false, None) => "failed",
                };
                let next = if outcome.delivered { None } else { *next };
                query =
                    query.bind(outcome.delivery_seq).bind(state).bind(outcome.attempt).bind(next).bind(outcome.lease);
            }
            query.execute(&mut *tx).await?;
        }
        // Each subscription's failing state, from its latest attempt in this batch.
        let mut latest: HashMap<&str, &Outcome> = HashMap::new();
        for (outcome, _) in outcomes {
            let entry = latest.entry(outcome.subscription_id.as_str()).or_insert(outcome);
            if outcome.attempted_at >= entry.attempted_at {
                *entry = outcome;
            }
        }
        let mut written = Written::default();
        let mut disabled_events = Vec::new();
        for (subscription_id, outcome) in latest {
            if outcome.delivered {
                sqlx::query(
                    "UPDATE subscriptions SET failing_since_us = NULL \
                     WHERE subscription_id = $1 AND failing_since_us IS NOT NULL",
                )
                .bind(subscription_id)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            sqlx::query(
                "UPDATE subscriptions SET failing_since_us = $1 \
                 WHERE subscription_id = $2 AND failing_since_us IS NULL",
            )
            .bind(outcome.attempted_at)
            .bind(subscription_id)
            .execute(&mut *tx)
            .await?;
            let disabled: Option<String> = sqlx::query_scalar(
                "UPDATE subscriptions SET enabled = 2, version = version + 1 \
                 WHERE subscription_id = $1 AND enabled = 1 AND failing_since_us <= $2 RETURNING program_id",
            )
            .bind(subscription_id)
            .bind(disable_before)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(program_id) = disabled {
                let row = Self::subscription(&mut *tx, &program_id, subscription_id).await?;
                disabled_events.push(NewEvent {
                    program_id,
                    event_type: "subscription.disabled",
                    customer_id: String::new(),
                    source: "webhooks",
                    source_position: format!("{subscription_id}.{}", row.version),
                    occurred_at: now,
                    data: serde_json::json!({
                        "subscription_id": subscription_id,
                        "url": row.endpoint.url,
                        "failing_since": row.failing_since.map(timestamp_text),
                        "reason": format!("every attempt failed since then (last: {})", last_failure(outcome)),
                    }),
                });
                written.disabled.push(subscription_id.to_owned());
            }
        }
        for event in &disabled_events {
            let except = event.data["subscription_id"].as_str();
            Self::record(&mut tx, &[event], except, now).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// A new pending delivery of `event_id` to a subscription, due now.
    pub async fn redeliver(
        conn: &mut AnyConnection,
        program_id: &str,
        subscription_id: &str,
        event_id: &str,
        now: Micros,
    ) -> Result<String, Error> {
        Self::subscription(&mut *conn, program_id, subscription_id).await?;
        let customer: Option<String> =
            sqlx::query_scalar("SELECT customer_id FROM events WHERE event_id = $1 AND program_id = $2")
                .bind(event_id)
                .bind(program_id)
                .fetch_optional(&mut *conn)
                .await?;
        let customer = customer.ok_or_else(|| Error::EventNotFound(event_id.to_owned()))?;
        let delivery_id = domain::new_id("dlv_");
        Self::insert_deliveries(conn, &[(delivery_id.clone(), subscription_id, event_id.to_owned(), &customer)], now)
            .await?;
        Ok(delivery_id)
    }

    /// Deliveries to one subscription, newest first, before `before` (a delivery's position).
    pub async fn deliveries(
        &self,
        program_id: &str,
        subscription_id: &str,
        event_id: Option<&str>,
        state: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, Error> {
        Self::subscription(&self.db.pool, program_id, subscription_id).await?;
        let rows = sqlx::query(
            "SELECT d.delivery_seq, d.delivery_id, d.subscription_id, d.event_id, d.customer_id, d.state, \
             d.next_attempt_us, d.created_at_us, e.event_type, e.body FROM deliveries d \
             JOIN events e ON e.event_id = d.event_id \
             WHERE d.subscription_id = $1 AND d.delivery_seq < $2 AND ($3 = '' OR d.event_id = $3) \
             AND ($4 = '' OR d.state = $4) ORDER BY d.delivery_seq DESC LIMIT $5",
        )
        .bind(subscription_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(event_id.unwrap_or(""))
        .bind(state.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let state: String = row.try_get("state")?;
            deliveries.push(DeliveryRow {
                delivery_seq: row.try_get("delivery_seq")?,
                delivery_id: row.try_get("delivery_id")?,
                subscription_id: row.try_get("subscription_id")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                customer_id: row.try_get("customer_id")?,
                next_attempt: if state == "pending" { row.try_get("next_attempt_us")? } else { None },
                state,
                created_at: row.try_get("created_at_us")?,
                body: row.try_get("body")?,
                attempts: Vec::new(),
            });
        }
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let list = (1..=deliveries.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT delivery_seq, attempted_at_us, status_code, latency_ms, response, error FROM attempts \
             WHERE delivery_seq IN ({list}) ORDER BY delivery_seq, attempt"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for d in &deliveries {
            query = query.bind(d.delivery_seq);
        }
        let mut by_seq: HashMap<i64, Vec<AttemptRow>> = HashMap::new();
        for row in query.fetch_all(&self.db.pool).await? {
            by_seq.entry(row.try_get("delivery_seq")?).or_default().push(AttemptRow {
                attempted_at: row.try_get("attempted_at_us")?,
                status_code: row.try_get("status_code")?,
                latency_ms: row.try_get("latency_ms")?,
                response: row.try_get("response")?,
                error: row.try_get("error")?,
            });
        }
        for d in &mut deliveries {
            d.attempts = by_seq.remove(&d.delivery_seq).unwrap_or_default();
        }
        Ok(deliveries)
    }

    /// One delivery by id, as [`Self::deliveries`] shows it.
    pub async fn delivery(
        &self,
        program_id: &str,
        subscription_id: &str,
        delivery_id: &str,
    ) -> Result<DeliveryRow, Error> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT delivery_seq FROM deliveries WHERE delivery_id = $1")
            .bind(delivery_id)
            .fetch_optional(&self.db.pool)
            .await?;
        let seq = seq.ok_or_else(|| Error::Corrupt(format!("delivery {delivery_id} is gone")))?;
        let mut rows = self.deliveries(program_id, subscription_id, None, None, Some(seq + 1), 1).await?;
        rows.pop().ok_or_else(|| Error::Corrupt(format!("delivery {delivery_id} is gone")))
    }
}

/// The body of an event as it is signed and sent: the Standard Webhooks
/// shape (`type`, `timestamp`, `data`) with our version and ids.
fn body(event: &NewEvent) -> String {
    serde_json::json!({
        "type": event.event_type,
        "version": "v1",
        "timestamp": timestamp_text(event.occurred_at),
        "program_id": event.program_id,
        "data": event.data,
    })
    .to_string()
}

/// RFC 3339 in UTC.
pub fn timestamp_text(at: Micros) -> String {
    loyalty_common::clock::to_timestamp(at).to_string()
}

fn last_failure(outcome: &Outcome) -> String {
    if outcome.status_code != 0 { format!("HTTP {}", outcome.status_code) } else { outcome.error.clone() }
}
