//! The outbox of a service whose changes others hear about (tiers,
//! referral, rewards): an event is a row of `outbox`, written in the
//! transaction that makes the change, so it exists if and only if the
//! change committed. Followers page through the events by `seq`
//! (`ListEvents`), which grows in commit order:
//!
//! - On PostgreSQL rows are written unnumbered and one publisher at a time
//!   (an advisory lock elects it among replicas) numbers the rows already
//!   committed when it looks, as the points ledger's publisher does. A row
//!   committing later gets a higher number from a later round, so a
//!   follower at `seq > cursor` never skips one. Numbering at insert would
//!   not do: a transaction that took number 7 may commit after the one
//!   that took 8, and a follower that saw 8 would never see 7.
//! - SQLite writes one transaction at a time, so a row is numbered by its
//!   own id in the transaction that writes it.
//!
//! Numbered events are kept for [`RETENTION`] after they were written, long
//! enough for a follower that was down for days; then they are purged.

use std::time::Duration;

use sqlx::{AnyConnection, Row};

use loyalty_proto::events::v1 as pb;

use crate::clock::{Clock, MICROS_PER_DAY, Micros, to_timestamp};
use crate::db::{Database, Dialect, is_unavailable, placeholders_with};
use crate::shutdown::ShutdownSignal;
use crate::status;
use crate::validate::FieldViolation;

/// How long numbered events are kept.
pub const RETENTION: Micros = 7 * MICROS_PER_DAY;
/// How often the publisher looks for committed, unnumbered events.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How often events past their retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);
/// Rows per INSERT statement (five values each): a full batch of the
/// rewards service's group commit (128) in one.
const ROWS_PER_STATEMENT: usize = 128;
/// Events one `ListEvents` call returns by default, and at most.
const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1_000;

/// An event to record with the change that makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub program_id: String,
    pub customer_id: String,
    /// The webhook event type, e.g. `tier.upgraded`.
    pub event_type: &'static str,
    pub occurred_at: Micros,
    /// The event's `data`: a JSON object.
    pub data: serde_json::Value,
}

/// Writes `events` in the caller's transaction.
/// `written_at` is the service clock's now: what retention counts from
/// (an event's `occurred_at` may lie well before it, as a backdated order's).
pub async fn append(
    conn: &mut AnyConnection,
    dialect: Dialect,
    written_at: Micros,
    events: &[Event],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        // Five values per row, and the write time once, last.
        let values = placeholders_with(chunk.len(), 5, &format!(", ${}", chunk.len() * 5 + 1));
        let sql = format!(
            "INSERT INTO outbox (program_id, customer_id, event_type, occurred_at_us, data, written_at_us) VALUES {values}"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for event in chunk {
            query = query
                .bind(event.program_id.clone())
                .bind(event.customer_id.clone())
                .bind(event.event_type)
                .bind(event.occurred_at)
                .bind(event.data.to_string());
        }
        query.bind(written_at).execute(&mut *conn).await?;
    }
    if dialect == Dialect::Sqlite {
        sqlx::query("UPDATE outbox SET seq = id WHERE seq IS NULL").execute(&mut *conn).await?;
    }
    Ok(())
}

/// Numbers the events committed and not numbered yet (PostgreSQL; SQLite
/// numbers at write). Returns the highest number handed out, if any.
pub async fn publish(db: &Database, lock_key: i64) -> Result<Option<i64>, sqlx::Error> {
    if db.dialect == Dialect::Sqlite {
        return Ok(None);
    }
    let mut tx = db.pool.begin().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(lock_key).fetch_one(&mut *tx).await?;
    if !locked {
        // Another replica is numbering right now; it numbers ours too.
        return Ok(None);
    }
    let max: Option<i64> = sqlx::query_scalar(
        "WITH ready AS (SELECT id FROM outbox WHERE seq IS NULL ORDER BY id LIMIT 10000), \
         numbered AS (SELECT id, nextval('outbox_seq') AS seq FROM ready), \
         updated AS (UPDATE outbox o SET seq = n.seq FROM numbered n WHERE o.id = n.id RETURNING o.seq) \
         SELECT MAX(seq) FROM updated",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(max)
}

/// Forgets numbered events written before `before`, oldest first, a few
/// thousand rows per statement; stops at the first row still kept (rows
/// are written in id order, so the rest are younger). Each statement reads
/// only the table's first rows: no index on the write time is needed.
/// Returns how many.
pub async fn purge(db: &Database, before: Micros) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 5000) \
             AND seq IS NOT NULL AND written_at_us < $1",
        )
        .bind(before)
        .execute(&db.pool)
        .await?
        .rows_affected();
        purged += done;
        if done < 5_000 {
            return Ok(purged);
        }
    }
}

/// Background job: numbers committed events every 100 ms and purges old
/// ones every hour, until shutdown. `lock_key` is the service's own.
pub async fn publisher(db: Database, lock_key: i64, clock: std::sync::Arc<dyn Clock>, mut shutdown: ShutdownSignal) {
    let mut publish_tick = tokio::time::interval(PUBLISH_EVERY);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge_tick = tokio::time::interval(PURGE_EVERY);
    purge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = publish_tick.tick() => {
                if let Err(error) = publish(&db, lock_key).await {
                    tracing::warn!(%error, "numbering outbox events failed, will retry");
                }
            }
            _ = purge_tick.tick() => match purge(&db, clock.now() - RETENTION).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "outbox events past their retention purged"),
                Err(error) => tracing::warn!(%error, "purging outbox events failed, will retry"),
            },
            () = shutdown.fired() => return,
        }
    }
}

/// `ListEvents` of a service whose errors carry `domain`: the request
/// checked, then one page and where the next one starts.
pub async fn list(
    db: &Database,
    domain: &str,
    after_sequence: i64,
    page_size: i32,
) -> Result<(Vec<pb::Event>, i64), tonic::Status> {
    let mut bad = Vec::new();
    if after_sequence < 0 {
        bad.push(FieldViolation::new("after_sequence", "must not be negative"));
    }
    let limit = match page_size {
        0 => DEFAULT_PAGE,
        1..=MAX_PAGE => page_size,
        _ => {
            bad.push(FieldViolation::new("page_size", format!("must be between 0 and {MAX_PAGE}")));
            0
        }
    };
    if !bad.is_empty() {
        return Err(status::invalid_argument(domain, &bad));
    }
    page(db, after_sequence, limit).await.map_err(|error| match is_unavailable(&error) {
        true => status::unavailable(domain, "the database", &error),
        false => status::internal(domain, &error),
    })
}

/// Up to `limit` numbered events after `after`, in order, and where the
/// next page starts.
pub async fn page(db: &Database, after: i64, limit: i32) -> Result<(Vec<pb::Event>, i64), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, program_id, customer_id, event_type, occurred_at_us, data FROM outbox \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&db.pool)
    .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        events.push(pb::Event {
            sequence: row.try_get("seq")?,
            program_id: row.try_get("program_id")?,
            customer_id: row.try_get("customer_id")?,
            r#type: row.try_get("event_type")?,
            occurred_at: Some(to_timestamp(row.try_get("occurred_at_us")?)),
            data_json: row.try_get("data")?,
        });
    }
    let next = events.last().map_or(after, |e| e.sequence);
    Ok((events, next))
}
