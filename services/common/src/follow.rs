//! Following the points ledger: `StreamEvents` from a cursor the consumer
//! stores itself, in batches, each applied in one transaction together with
//! the cursor. After downtime a consumer resumes where it stopped; entries it
//! already applied are skipped (consumers also key what they record by
//! transaction id), so nothing counts twice.
//!
//! Only one replica of a consuming service follows at a time: on PostgreSQL,
//! replicas take turns through a session advisory lock held for as long as
//! they consume. SQLite means one process anyway.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::{AnyConnection, Connection};

use loyalty_proto::points::v1 as points;
use loyalty_proto::points::v1::points_service_client::PointsServiceClient;

use crate::db::{Database, Dialect};
use crate::peer::Peers;
use crate::shutdown::ShutdownSignal;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Entries applied per transaction at most.
const BATCH: usize = 256;
/// How long a batch waits for more entries before it is applied.
const LINGER: Duration = Duration::from_millis(20);
const RETRY: Duration = Duration::from_secs(1);

/// A service that consumes the ledger.
pub trait LedgerConsumer: Send + Sync + 'static {
    /// Names the consumer in logs.
    const NAME: &'static str;
    /// The advisory lock that elects the one replica that consumes.
    const LOCK_KEY: i64;

    /// Only entries of these kinds (empty: all), read at most every
    /// [`Self::INTERVAL_MS`] (0: as soon as they are published).
    const KINDS: &'static [points::EntryKind] = &[];
    const INTERVAL_MS: i32 = 0;

    fn database(&self) -> &Database;
    /// The last sequence applied (0 before the first).
    fn cursor(&self) -> impl Future<Output = Result<i64, BoxError>> + Send;
    /// Applies `entries` and moves the cursor to `last_sequence`, in one transaction.
    fn apply(
        &self,
        entries: Vec<points::LedgerEntry>,
        last_sequence: i64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Runs until shutdown, reconnecting after any failure.
pub async fn run<C: LedgerConsumer>(consumer: Arc<C>, points_addr: String, peers: Peers, mut shutdown: ShutdownSignal) {
    loop {
        let Some(mut leadership) = become_leader(consumer.database(), C::LOCK_KEY, &mut shutdown).await else {
            return;
        };
        match consume(consumer.as_ref(), &points_addr, &peers, &mut leadership, &mut shutdown).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(consumer = C::NAME, %error, "ledger consumer interrupted, reconnecting"),
        }
        drop(leadership);
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.fired() => return,
        }
    }
}

/// Waits for the consumer lock (PostgreSQL); `None` on shutdown.
async fn become_leader(db: &Database, key: i64, shutdown: &mut ShutdownSignal) -> Option<Option<AnyConnection>> {
    if db.dialect == Dialect::Sqlite {
        return Some(None);
    }
    loop {
        if let Ok(mut conn) = db.pool.acquire().await {
            let locked: Result<bool, _> =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await;
            if let Ok(true) = locked {
                // The session lock lives as long as this connection; take it
                // out of the pool so it is never handed to anyone else.
                return Some(Some(conn.detach()));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.fired() => return None,
        }
    }
}

async fn consume<C: LedgerConsumer>(
    consumer: &C,
    points_addr: &str,
    peers: &Peers,
    leadership: &mut Option<AnyConnection>,
    shutdown: &mut ShutdownSignal,
) -> Result<(), BoxError> {
    let channel = peers.endpoint(points_addr)?.connect().await?;
    let mut client = PointsServiceClient::new(peers.attach(channel));
    let cursor = consumer.cursor().await?;
    let request = points::StreamEventsRequest {
        after_sequence: cursor,
        program_id: String::new(),
        kinds: C::KINDS.iter().map(|&k| k as i32).collect(),
        interval_ms: C::INTERVAL_MS,
    };
    let mut stream = client.stream_events(request).await?.into_inner();
    tracing::info!(consumer = C::NAME, after_sequence = cursor, "following the points ledger");
    let mut lock_check = tokio::time::interval(RETRY);
    loop {
        let first = tokio::select! {
            next = stream.next() => next,
            () = shutdown.fired() => return Ok(()),
            _ = lock_check.tick() => {
                // A database restart ends the lock's session, and with it the
                // lock: stop, so that two replicas never consume at once.
                if let Some(conn) = leadership.as_mut()
                    && !matches!(tokio::time::timeout(RETRY, conn.ping()).await, Ok(Ok(())))
                {
                    return Err("the consumer lock's database session ended".into());
                }
                continue;
            }
        };
        let Some(first) = first else { return Err("the points ledger stream ended".into()) };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match tokio::time::timeout(LINGER, stream.next()).await {
                Ok(Some(message)) => batch.push(message?),
                Ok(None) | Err(_) => break,
            }
        }
        let entries: Vec<points::LedgerEntry> = batch.into_iter().filter_map(|m| m.entry).collect();
        let last = entries.iter().map(|e| e.sequence).max().unwrap_or(cursor);
        consumer.apply(entries, last).await?;
    }
}

// ---------------------------------------------------------------- cursors

// Where each follower stands is a row of `consumer_cursors` (consumer, last_sequence)
// in the follower's own database, written in the transaction that applies a batch.

/// The last sequence `consumer` applied (0 before the first).
pub async fn read_cursor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    consumer: &str,
) -> Result<i64, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar("SELECT last_sequence FROM consumer_cursors WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(executor)
        .await?;
    Ok(last.unwrap_or(0))
}

/// [`read_cursor`] inside a batch's transaction, the row locked on
/// PostgreSQL so two appliers of one consumer take turns.
pub async fn lock_cursor(conn: &mut AnyConnection, dialect: Dialect, consumer: &str) -> Result<i64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT last_sequence FROM consumer_cursors WHERE consumer = $1{}",
        dialect.for_update()
    ));
    let last: Option<i64> = sqlx::query_scalar(sql).bind(consumer).fetch_optional(conn).await?;
    Ok(last.unwrap_or(0))
}

/// Moves `consumer`'s cursor forward to `last_sequence`, never back.
pub async fn advance_cursor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    consumer: &str,
    last_sequence: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumer_cursors (consumer, last_sequence) VALUES ($1, $2) \
         ON CONFLICT (consumer) DO UPDATE SET last_sequence = excluded.last_sequence \
         WHERE consumer_cursors.last_sequence < excluded.last_sequence",
    )
    .bind(consumer)
    .bind(last_sequence)
    .execute(executor)
    .await?;
    Ok(())
}
